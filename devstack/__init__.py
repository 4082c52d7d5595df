"""Local development/test infrastructure: throwaway PostgreSQL and Redis servers."""
