"""Put on PYTHONPATH (core/launch.py) for a training of several CPU processes: its
sitecustomize.py runs in each of them."""
