"""The serving transport of `modelreg serve --workers N`: HTTP/1.1 on an event loop.

gunicorn's arbiter forks the workers and keeps them alive (heartbeats, HUP reloads, SIGTERM
stops, the metrics folder); each worker (worker.py) runs one uvloop event loop that accepts
its connections and parses every request with httptools (llhttp, Node's parser, under
protocol.py). A request the app's fast path can answer from memory alone (a cached model)
is answered on the loop, with no thread hand-off; everything else runs the Flask WSGI app in
a bounded thread pool (wsgi.py), and the loop writes its answer with flow control.
"""
