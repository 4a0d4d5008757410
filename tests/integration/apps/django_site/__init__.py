"""A real Django project for the Django integration's tests: an include()d app with path(),
re_path() and DRF router routes, ORM models on SQLite and PostgreSQL, a locmem and a Redis
cache. The servers come from the environment (`DJANGO_SITE_POSTGRES`, `DJANGO_SITE_REDIS`),
set by the tests before Django is set up."""
