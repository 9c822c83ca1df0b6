"""The two reference servers of bench/floor.py, run inside the peer venv (see floor.py).

`floor`: a raw ASGI app that answers every request with a fixed JSON body and does no work at
all, under uvicorn + httptools + uvloop: the most a Python HTTP stack here can carry.
`fastapi`: the hand-made 25-line FastAPI app a team would write around `model.predict`.
Run as `python -m uvicorn bench.floor_apps:floor` / `bench.floor_apps:fastapi_app`; the
FastAPI app loads the joblib files named by $BENCH_MODELS (name=path,name=path).
"""

# No `from __future__ import annotations`: FastAPI reads the route's annotations at run time,
# and the body model is local to the factory.
import os

ANSWER = b'{"predictions":[0.0]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(ANSWER))]


async def floor(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})


def _fastapi_app():  # type: ignore[no-untyped-def]
    import joblib
    import numpy as np
    from fastapi import FastAPI, HTTPException
    from pydantic import BaseModel

    models = {}
    for item in filter(None, os.environ.get("BENCH_MODELS", "").split(",")):
        name, _, path = item.partition("=")
        models[name] = joblib.load(path)

    class Instances(BaseModel):
        instances: list[list[float]]

    app = FastAPI()

    @app.post("/models/{name}/predict")
    def predict(name: str, body: Instances) -> dict:
        model = models.get(name)
        if model is None:
            raise HTTPException(404, "no such model")
        return {"predictions": model.predict(np.asarray(body.instances)).tolist()}

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    return app


fastapi_app = _fastapi_app() if os.environ.get("BENCH_FLOOR_APP") == "fastapi" else None
