// kstatus prints the health the kstatus library (sigs.k8s.io/cli-utils/pkg/kstatus, what Flux and
// Argo-style health checks use) computes for Kubernetes objects read as a JSON or YAML stream on
// stdin (several documents, or a List). One JSON line per object:
//
//	{"kind":"MapDataset","name":"x","status":"Failed","message":"..."}
//
// With -argocd-lua FILE it runs an Argo CD custom health check (a Lua script, through gopher-lua as
// Argo CD does) instead and prints its status (Healthy, Progressing, Degraded, ...) and message.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"

	lua "github.com/yuin/gopher-lua"
)

var luaScript string // -argocd-lua: the health check script's source

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
	if luaScript != "" {
		health, message, err := argoHealth(u.Object)
		if err != nil {
			return fmt.Errorf("%s/%s: %w", u.GetKind(), u.GetName(), err)
		}
		return out.Encode(result{u.GetKind(), u.GetName(), health, message})
	}
	res, err := status.Compute(u)
	if err != nil {
		return fmt.Errorf("%s/%s: %w", u.GetKind(), u.GetName(), err)
	}
	return out.Encode(result{u.GetKind(), u.GetName(), string(res.Status), res.Message})
}

// argoHealth runs the health script like Argo CD: the object as the global `obj`, the script
// returns a table {status = ..., message = ...}.
func argoHealth(obj map[string]interface{}) (string, string, error) {
	L := lua.NewState()
	defer L.Close()
	L.SetGlobal("obj", toLua(L, obj))
	if err := L.DoString(luaScript); err != nil {
		return "", "", err
	}
	hs, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", errors.New("the health script returned no table")
	}
	return lua.LVAsString(hs.RawGetString("status")), lua.LVAsString(hs.RawGetString("message")), nil
}

func toLua(L *lua.LState, v interface{}) lua.LValue {
	switch x := v.(type) {
	case map[string]interface{}:
		t := L.NewTable()
		for k, item := range x {
			t.RawSetString(k, toLua(L, item))
		}
		return t
	case []interface{}:
		t := L.NewTable()
		for _, item := range x {
			t.Append(toLua(L, item))
		}
		return t
	case string:
		return lua.LString(x)
	case bool:
		return lua.LBool(x)
	case int64:
		return lua.LNumber(x)
	case float64:
		return lua.LNumber(x)
	default:
		return lua.LNil
	}
}

func main() {
	script := flag.String("argocd-lua", "", "run this Argo CD Lua health script instead of kstatus")
	flag.Parse()
	if *script != "" {
		src, err := os.ReadFile(*script)
		if err != nil {
			fmt.Fprintln(os.Stderr, "kstatus:", err)
			os.Exit(2)
		}
		luaScript = string(src)
	}
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
