"""``nst-serve`` whose model takes ``SLOW_S`` seconds on every request (the warm-up stays fast): run as
``python tests/serve_slow_model.py --model M.onnx ...`` by the test of shutdown with a run abandoned past its
deadline (ONNX Runtime cannot stop a run, so the thread goes on after the 504)."""

import sys
import time

import nst_fast.serve.inference as inference
from nst_fast.serve.cli import main

SLOW_S = 60.0
fast_stylize_array = inference.stylize_array


def slow_stylize_array(model, rgb, *args, **kwargs):
    time.sleep(SLOW_S)
    return fast_stylize_array(model, rgb, *args, **kwargs)


inference.stylize_array = slow_stylize_array
sys.exit(main())
