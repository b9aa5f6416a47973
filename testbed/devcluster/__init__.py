"""TEST INFRASTRUCTURE — a local Kubernetes cluster with one real node, for tests and the demo.

Not part of the operator, not in the wheel or the image (its own source root,
`testbed/`). One implementation serves the pytest fixtures, `make cluster-up`
and `make demo`: etcd, kube-apiserver, kube-controller-manager, kube-scheduler
(control plane, `controlplane.py`), containerd + kubelet + kube-proxy on a CNI
bridge (`node.py`, `network.py`), all built from upstream sources by
`hack/build-control-plane.sh` or from Debian packages, and a real
redis-server; plus the e2e harness (`harness.py`) and the synthetic
heartbeats the benchmarks publish (`heartbeats.py`).
"""
