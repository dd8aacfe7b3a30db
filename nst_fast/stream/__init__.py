"""Streamed training photos: ``nst-convert-photos`` turns a photo folder into litdata chunks (a local folder or
``s3://``), and ``data=stream`` trains from them, each DDP rank and loader worker on its own share, with the
loader's position in checkpoints. Needs the ``stream`` extra (litdata, boto3); torch-side only."""
