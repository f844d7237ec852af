"""Put on PYTHONPATH (core/llamafactory/launch.py) for processes started on a machine with no usable GPU (a
training of several CPU processes, a model server): its
sitecustomize.py runs in each of them."""
