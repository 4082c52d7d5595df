# Readwire application image: gunicorn + gevent (gunicorn.conf.py). Also runs the migrate job.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /srv/readwire

# The pinned runtime lock only (no dev tools); its own layer, so code edits reuse it.
COPY requirements/app.txt requirements/app.txt
RUN pip install -r requirements/app.txt

COPY app/ app/
COPY migrations/ migrations/
COPY gunicorn.conf.py ./

RUN useradd --system --no-create-home --user-group readwire
USER readwire

ENV GUNICORN_BIND=0.0.0.0:8000 \
    READWIRE_INSTANCE_DIR=/tmp/readwire
EXPOSE 8000

HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]

CMD ["gunicorn", "-c", "gunicorn.conf.py", "app:create_app()"]
