"""The learning algorithm: flows, networks, policies and the NF-HIQL agent (torch)."""
