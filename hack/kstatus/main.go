// kstatus prints the health the kstatus library (sigs.k8s.io/cli-utils/pkg/kstatus, what Flux and
// Argo-style health checks use) computes for Kubernetes objects read as JSON or YAML on stdin
// (several documents, or a List). One JSON line per object:
//
//	{"kind":"MapDataset","name":"x","status":"Failed","message":"..."}
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func compute(raw []byte, out *json.Encoder) error {
	obj, _, err := unstructured.UnstructuredJSONScheme.Decode(raw, nil, nil)
	if err != nil {
		return err
	}
	if list, ok := obj.(*unstructured.UnstructuredList); ok {
		for i := range list.Items {
			if err := one(&list.Items[i], out); err != nil {
				return err
			}
		}
		return nil
	}
	return one(obj.(*unstructured.Unstructured), out)
}

func one(u *unstructured.Unstructured, out *json.Encoder) error {
	res, err := status.Compute(u)
	if err != nil {
		return fmt.Errorf("%s/%s: %w", u.GetKind(), u.GetName(), err)
	}
	return out.Encode(result{u.GetKind(), u.GetName(), string(res.Status), res.Message})
}

func main() {
	dec := utilyaml.NewYAMLOrJSONDecoder(os.Stdin, 4096)
	out := json.NewEncoder(os.Stdout)
	for {
		var obj json.RawMessage
		if err := dec.Decode(&obj); err != nil {
			if errors.Is(err, io.EOF) {
				return
			}
			fmt.Fprintln(os.Stderr, "kstatus:", err)
			os.Exit(2)
		}
		if len(obj) == 0 || string(obj) == "null" {
			continue
		}
		if err := compute(obj, out); err != nil {
			fmt.Fprintln(os.Stderr, "kstatus:", err)
			os.Exit(1)
		}
	}
}
