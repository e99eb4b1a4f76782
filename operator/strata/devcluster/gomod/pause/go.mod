// The pod sandbox ("pause") image's only program: holds the pod's namespaces open.
module strata.dev/devcluster/pause

go 1.26.0
