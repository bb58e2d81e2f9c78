"""gunicorn settings for the REST service (`gunicorn -c rest/gunicorn.conf.py 'rest:create_app()'`).

Threads, not processes, carry concurrency: a request spends most of its time receiving an upload or
waiting on Redis and the object store. The timeout leaves room for a large upload over a slow link.
"""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '5000')}"
worker_class = "gthread"
workers = 2
threads = 8
timeout = 120
graceful_timeout = 30
accesslog = "-"
