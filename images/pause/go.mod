module kube-mapserver/images/pause

go 1.21
