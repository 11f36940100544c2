// libcni-driver runs a conflist through the real libcni, the library inside containerd, CRI-O
// and podman, so that end-to-end tests exercise the plugins exactly as a runtime calls them.
//
//	libcni-driver ACTION -conflist FILE -netns PATH -id ID [-ifname eth0] -path DIRS -cache DIR
//	              [-args K=V;K=V] [-cap JSON]
//
// ACTION is add, check, del, cached (print the cached ADD result), validate or version.
// add and cached print the result as JSON on stdout; a failure prints the error on stdout as
// JSON ({"code","msg","details"} when the plugin returned a CNI error) and exits 1.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: libcni-driver add|check|del|cached|validate|version [flags]"))
	}
	action := os.Args[1]
	fs := flag.NewFlagSet(action, flag.ExitOnError)
	conflist := fs.String("conflist", "", "conflist file")
	netns := fs.String("netns", "", "network namespace path")
	id := fs.String("id", "", "container ID")
	ifname := fs.String("ifname", "eth0", "interface name")
	path := fs.String("path", "", "plugin directories, ':' separated")
	cache := fs.String("cache", "", "libcni cache directory")
	args := fs.String("args", "", "CNI_ARGS as K=V;K=V")
	capArgs := fs.String("cap", "", "capability args (runtimeConfig) as JSON")
	plugin := fs.String("plugin", "", "plugin type for version")
	_ = fs.Parse(os.Args[2:])

	cni := libcni.NewCNIConfigWithCacheDir(filepath.SplitList(*path), *cache, nil)
	ctx := context.Background()

	if action == "version" {
		info, err := cni.GetVersionInfo(ctx, *plugin)
		if err != nil {
			fail(err)
		}
		out(map[string]interface{}{"supportedVersions": info.SupportedVersions()})
		return
	}

	list, err := libcni.ConfListFromFile(*conflist)
	if err != nil {
		fail(err)
	}
	rt := &libcni.RuntimeConf{ContainerID: *id, NetNS: *netns, IfName: *ifname, CacheDir: *cache}
	for _, kv := range strings.Split(*args, ";") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			rt.Args = append(rt.Args, [2]string{k, v})
		}
	}
	if *capArgs != "" {
		if err := json.Unmarshal([]byte(*capArgs), &rt.CapabilityArgs); err != nil {
			fail(fmt.Errorf("-cap: %w", err))
		}
	}

	switch action {
	case "add":
		res, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			fail(err)
		}
		printResult(res)
	case "check":
		if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
			fail(err)
		}
		out(map[string]string{"check": "ok"})
	case "del":
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			fail(err)
		}
		out(map[string]string{"del": "ok"})
	case "cached":
		res, err := cni.GetNetworkListCachedResult(list, rt)
		if err != nil {
			fail(err)
		}
		if res == nil {
			out(nil)
			return
		}
		printResult(res)
	case "validate":
		caps, err := cni.ValidateNetworkList(ctx, list)
		if err != nil {
			fail(err)
		}
		out(map[string]interface{}{"capabilities": caps})
	default:
		fail(fmt.Errorf("unknown action %q", action))
	}
}

func printResult(res types.Result) {
	if err := res.PrintTo(os.Stdout); err != nil {
		fail(err)
	}
}

func out(v interface{}) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func fail(err error) {
	if e, ok := err.(*types.Error); ok {
		out(map[string]interface{}{"code": e.Code, "msg": e.Msg, "details": e.Details})
	} else {
		out(map[string]interface{}{"code": 0, "msg": err.Error()})
	}
	os.Exit(1)
}
