"""TEST INFRASTRUCTURE — a local Kubernetes control plane for tests and the demo.

Not part of the operator. One implementation serves the pytest fixtures,
`make cluster-up` and `make demo`: etcd + kube-apiserver (+ the garbage
collector and namespace controllers of kube-controller-manager) built from Go
modules by `hack/build-control-plane.sh`, a harness kubelet that runs pods as
local processes, and a real redis-server.
"""
