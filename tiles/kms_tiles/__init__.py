"""kube-mapserver tile cache: MapCache FastCGI workers behind a small HTTP server (`kube-mapserver-tiles`)."""
