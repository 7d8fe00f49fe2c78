"""The framework's ceiling on this machine: a FastAPI endpoint that returns a constant JSON body."""

from fastapi import FastAPI

app = FastAPI()
BODY = {"status": "ok", "items": [1, 2, 3]}


@app.get("/constant")
async def constant() -> dict:
    return BODY
