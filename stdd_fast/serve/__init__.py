"""stdd_fast.serve: STDD behind NVIDIA Triton Inference Server (``stdd serve``): video bytes in, actions out.

* :mod:`~stdd_fast.serve.model`: the Triton Python-backend model ``stdd`` (one request = encoded
  video files, official sampling, PyAV/DALI decoding, the Predictor, ranked labels and scores);
* :mod:`~stdd_fast.serve.repository`: writes the model repository (``config.pbtxt``, the model
  file, the classifier artifact, labels), next to the exported ``stdd_frames`` model;
* :mod:`~stdd_fast.serve.server`: finds and runs the real ``tritonserver`` binary (NVIDIA's, or
  the one the ``nvidia-pytriton`` wheel bundles) on loopback ports until a signal stops it.

Nothing here is imported by ``import stdd_fast``; the Triton packages are imported where used.
"""
