"""``nst-serve``: an HTTP server for nst-fast ONNX exports (FastAPI + uvicorn) and its web page.

    nst-serve --model export/starry.onnx --model export/five.onnx --port 8000

Modules: ``settings`` (``ServeSettings``: limits and runtime options), ``registry`` (the loaded models and what
``/v1/styles`` says about them), ``limits`` (admission control: concurrent inferences, wait queue, deadline),
``metrics`` (Prometheus), ``app`` (``create_app``: routes and request parsing), ``cli`` (the command line).
Decoding and stylising go through ``nst_fast.images`` and ``nst_fast.stylize``, the core ``nst-stylize`` uses.
Needs the ``serve`` extra: ``pip install -e ".[serve]"``.
"""
