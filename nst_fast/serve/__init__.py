"""``nst-serve``: an HTTP server for nst-fast ONNX exports (FastAPI + uvicorn) and its web page.

    nst-serve --model export/starry.onnx --model export/five.onnx --port 8000

Modules, one job each: ``settings`` (``ServeSettings``: limits and runtime options), ``registry`` (the loaded
models and what ``/v1/styles`` says about them), ``limits`` (admission control: concurrent inferences, wait
queue, deadline), ``uploads`` (the upload byte budget and minimum rate), ``forms`` (parsing and checking the form
of ``POST /v1/stylize``), ``inference`` (one upload through a model), ``readiness`` (the warm-up behind
``/readyz``), ``errors`` (JSON error answers and handlers), ``metrics`` (Prometheus), ``routes``, ``app``
(``create_app`` composing them), ``connections`` (header timeout, connection cap, JSON refusals in uvicorn's
protocol) and ``cli`` (the command line and shutdown). The page's in-browser mode: ``webfiles`` (the page and the
onnxruntime-web files, the model list), ``browser`` (serving them, cross-origin isolation, model downloads) and
``site`` (the static site of ``export.web``); docs/browser.md. Decoding and stylising go through ``nst_fast.images`` and
``nst_fast.stylize``, the core ``nst-stylize`` uses. Needs the ``serve`` extra: ``pip install -e ".[serve]"``.
The user guide is docs/serve.md.
"""
