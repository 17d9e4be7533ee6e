"""The runtime a search runs on, on the driver's side: Ray and the Keras backends.

``cluster`` starts a local Ray on loopback or joins a cluster within a deadline, fits resource requests to its
nodes and cleans up after a killed driver; ``backends`` the Keras backends (installed, threads, GPU memory
shares); ``quiet`` the quiet environment every process of a search gets. A new launcher goes in ``launch/``; a
new way to reach a cluster goes here.
"""
