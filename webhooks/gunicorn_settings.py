"""gunicorn settings of the web process, in one place for the Procfile, `tagsync web`,
`tagsync run`, the tests and the benchmark, so all of them run the receiver alike.

Loaded by path (`gunicorn -c webhooks/gunicorn_settings.py ...`), in gunicorn's master, before
gevent patches the workers: keep it to the standard library (importing the app, requests or
redis here would load them unpatched).

gevent, not threads: a webhook spends its time waiting on one Redis round trip; greenlets wait
without OS thread switches and GIL hand-offs, and requests arriving together share one Redis
write (workers/groupcommit.py). Measured on 2 cores: +43 % single-event webhooks/s over
gthread with 4 threads (bench/README.md).
"""

import os

bind = "0.0.0.0:" + os.environ.get("PORT", "8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gevent"
worker_connections = 200  # concurrent requests per worker process
graceful_timeout = 10
# No access log: AC's webhook URL carries a secret token in its path. The app counts webhooks
# in /metrics and logs problems instead.
accesslog = None
