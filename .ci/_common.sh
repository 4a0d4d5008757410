# Sourced by .ci/matrix and .ci/lower-bounds: the pyenv interpreter of a version, and the
# real-server integrations each extra venv runs once (with the unit tests).
pyenv_python() {
    local root="${PYENV_ROOT:-$HOME/.pyenv}" python
    python=$(compgen -G "$root/versions/$1.*/bin/python3" | sort -V | tail -1 || true)
    if [ -z "$python" ]; then
        echo "${0##*/}: Python $1 not found under $root/versions" >&2
        return 1
    fi
    echo "$python"
}
INTEGRATION_PASS=(
    tests/integration/test_uvicorn_example.py
    "tests/integration/test_run.py::test_every_request_counted_once_in_one_scrape"
    tests/integration/test_sqlalchemy_postgres.py
    tests/integration/test_asyncpg.py
    tests/integration/test_psycopg.py
    tests/integration/test_redis.py
    tests/integration/test_urllib3_requests.py
    tests/integration/test_aiohttp_client.py
    tests/integration/test_flask.py
    tests/integration/test_django.py
    tests/integration/test_run_wsgi.py
    "tests/integration/test_flask_shop.py::test_python_m_example"
)
