// Command argocd-lua evaluates Argo CD resource customizations exactly as Argo CD does:
// it reads argocd-cm from a cluster through Argo CD's own settings manager, and runs the
// health and action Lua through Argo CD's own util/lua VM (gopher-lua, restricted libraries).
//
// Usage (the cluster is $KUBECONFIG; argocd-cm is read from --namespace, default "argocd"):
//
//	argocd-lua health  <object.json>           -> {"status": ..., "message": ...} or null
//	argocd-lua actions <object.json>           -> [{"name": ..., "disabled": ...}, ...]
//	argocd-lua run     <object.json> <action>  -> [{"operation": ..., "patch": {...}}, ...]
//	argocd-lua application <app.yaml>          -> the Application, decoded strictly by Argo CD's types
//
// `run` prints, per impacted resource, the JSON merge patch Argo CD's API server would send
// (the same jsonpatch.CreateMergePatch of live vs. returned object), so a test can apply it.
// An object file of "-" is read from stdin. Errors go to stderr with exit status 1.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"

	jsonpatch "github.com/evanphx/json-patch"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	appv1 "github.com/argoproj/argo-cd/v3/pkg/apis/application/v1alpha1"
	"github.com/argoproj/argo-cd/v3/util/lua"
	"github.com/argoproj/argo-cd/v3/util/settings"
)

func main() {
	namespace := flag.String("namespace", "argocd", "namespace of argocd-cm")
	flag.Parse()
	if err := run(*namespace, flag.Args(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "argocd-lua:", err)
		os.Exit(1)
	}
}

func run(namespace string, args []string, out io.Writer) error {
	if len(args) < 2 {
		return fmt.Errorf("usage: argocd-lua [--namespace NS] health|actions|run|application FILE [ACTION]")
	}
	if args[0] == "application" {
		return printApplication(args[1], out)
	}
	obj, err := readObject(args[1])
	if err != nil {
		return err
	}
	vm, err := newVM(namespace)
	if err != nil {
		return err
	}
	var result any
	switch command := args[0]; command {
	case "health":
		script, _, err := vm.GetHealthScript(obj)
		if err != nil {
			return err
		}
		if script == "" {
			return fmt.Errorf("argocd-cm has no health script for %s", obj.GroupVersionKind().GroupKind())
		}
		// GetResourceHealth is the path Argo CD's controller takes (script lookup, libraries).
		status, err := lua.ResourceHealthOverrides(vm.ResourceOverrides).GetResourceHealth(obj)
		if err != nil {
			return err
		}
		result = status
	case "actions":
		scripts, err := vm.GetResourceActionDiscovery(obj)
		if err != nil {
			return err
		}
		actions, err := vm.ExecuteResourceActionDiscovery(obj, scripts)
		if err != nil {
			return err
		}
		sort.Slice(actions, func(i, j int) bool { return actions[i].Name < actions[j].Name })
		result = actions
	case "run":
		if len(args) != 3 {
			return fmt.Errorf("run needs an action name")
		}
		result, err = runAction(vm, obj, args[2])
		if err != nil {
			return err
		}
	default:
		return fmt.Errorf("unknown command %q (health, actions, run)", command)
	}
	encoded, err := json.Marshal(result)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, string(encoded))
	return err
}

type impact struct {
	Operation string          `json:"operation"`
	Patch     json.RawMessage `json:"patch,omitempty"`
	Resource  map[string]any  `json:"resource,omitempty"`
}

// runAction mirrors Argo CD's RunResourceActionV2: look up the action, execute it, and for
// a patch compute the merge patch of live against returned object.
func runAction(vm lua.VM, obj *unstructured.Unstructured, name string) ([]impact, error) {
	action, err := vm.GetResourceAction(obj, name)
	if err != nil {
		return nil, err
	}
	impacted, err := vm.ExecuteResourceAction(obj, action.ActionLua, nil)
	if err != nil {
		return nil, err
	}
	liveBytes, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	impacts := []impact{}
	for _, resource := range impacted {
		newBytes, err := json.Marshal(resource.UnstructuredObj)
		if err != nil {
			return nil, err
		}
		switch resource.K8SOperation {
		case lua.PatchOperation:
			patch, err := jsonpatch.CreateMergePatch(liveBytes, newBytes)
			if err != nil {
				return nil, err
			}
			impacts = append(impacts, impact{Operation: "patch", Patch: patch})
		case lua.CreateOperation:
			impacts = append(impacts, impact{Operation: "create", Resource: resource.UnstructuredObj.Object})
		}
	}
	return impacts, nil
}

func newVM(namespace string) (lua.VM, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	config, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
	if err != nil {
		return lua.VM{}, fmt.Errorf("kubeconfig: %w", err)
	}
	clientset, err := kubernetes.NewForConfig(config)
	if err != nil {
		return lua.VM{}, err
	}
	manager := settings.NewSettingsManager(context.Background(), clientset, namespace)
	overrides, err := manager.GetResourceOverrides()
	if err != nil {
		return lua.VM{}, fmt.Errorf("reading argocd-cm in namespace %s: %w", namespace, err)
	}
	return lua.VM{ResourceOverrides: overrides}, nil
}

// printApplication decodes an Application manifest with Argo CD's own types, refusing
// unknown fields, and prints it back as JSON (what Argo CD would store).
func printApplication(path string, out io.Writer) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var app appv1.Application
	if err := yaml.UnmarshalStrict(data, &app); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	encoded, err := json.Marshal(app)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(out, string(encoded))
	return err
}

func readObject(path string) (*unstructured.Unstructured, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(data); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return obj, nil
}
