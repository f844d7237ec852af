"""Put on PYTHONPATH (core/launch.py) for processes started on a machine with no usable GPU (a
training of several CPU processes, a server or export of a quantized model): its
sitecustomize.py runs in each of them."""
