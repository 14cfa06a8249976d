"""stdd_fast.graphs: what an exported graph is, for the exporters that write one and the runtimes that run one.

* :mod:`~stdd_fast.graphs.spec`: the export spec a graph carries (classes, classifier fingerprint, input);
* :mod:`~stdd_fast.graphs.trace`: tracing a model to ONNX (the exporter call, writing the file);
* :mod:`~stdd_fast.graphs.checks`: what a graph may contain (static shapes, TensorRT's op set);
* :mod:`~stdd_fast.graphs.encoder`: the encoder alone as a graph (what the CPU default runs);
* :mod:`~stdd_fast.graphs.plan`: a TensorRT plan's sidecar (what it was built from and for).

``stdd_fast.export`` (the exporters) and ``stdd_fast.predict`` (the runtimes) both stand on this room;
it imports neither. Nothing here imports onnx, onnxruntime or tensorrt until a function needs it.
"""
