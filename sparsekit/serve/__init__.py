"""Serving an artifact over HTTP with request batching: ``sparsekit serve ARTIFACT`` or, in Python::

    from sparsekit.serve import build_app, run
    run(build_app("runs/main-job/artifact", compile=True), port=8000)

``create_app(predictor)`` serves any Predictor-like object (``predict(inputs) -> one result per input``); the
predictor's ``task_type`` (sequence classification, token classification, QA) picks the request and response
schema (schemas.py).
"""
from sparsekit.serve.app import ModelInfo, create_app, describe_model
from sparsekit.serve.batcher import BatcherClosed, BatchStats, MicroBatcher, Overloaded
from sparsekit.serve.server import ServeError, build_app, run
from sparsekit.serve.validation import Limits, RequestError, parse_texts

__all__ = ["BatchStats", "BatcherClosed", "Limits", "MicroBatcher", "ModelInfo", "Overloaded", "RequestError",
           "ServeError", "build_app", "create_app", "describe_model", "parse_texts", "run"]
