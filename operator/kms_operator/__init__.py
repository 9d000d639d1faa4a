"""The kube-mapserver operator (Kopf). The folder is `operator/`, the package `kms_operator`:
a package named `operator` would shadow the standard library."""
