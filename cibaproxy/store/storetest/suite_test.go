package storetest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestMemStore runs the suite against the memory store, which implements
// every hook of Engine; STORETEST_MUTANT gives it a fault.
func TestMemStore(t *testing.T) {
	Run(t, memEngine(os.Getenv("STORETEST_MUTANT")))
}

// mutants are the faults of the memory store, each with a subtest that
// must catch it.
var mutants = map[string]string{
	"create-overwrites":          "CreateGet",
	"get-shares":                 "CreateGet",
	"no-user-limit":              "UserLimitRefuses",
	"replace-keeps-items":        "UserLimitReplacesOldest",
	"count-by-subject":           "UserLimitCountAs",
	"writes-on-error":            "Update",
	"decision-keeps-count":       "Update",
	"items-keep-their-request":   "UpdateQueue",
	"sweep-keeps-count":          "ExpiryAndSweep",
	"due-latest-first":           "OutboxDueItems",
	"due-no-limit":               "OutboxDueItems",
	"due-skip-ignored":           "OutboxDueItems",
	"scan-no-stop":               "OutboxDeleteCountScan",
	"delete-first-only":          "OutboxDeleteCountScan",
	"lease-when-not-due":         "OutboxLeaseRetry",
	"retry-keeps-lease":          "OutboxLeaseRetry",
	"setting-nil-deletes":        "Settings",
	"setting-or-create-races":    "ConcurrentSettings",
	"remember-always-new":        "ReplayCache",
	"remember-ignores-namespace": "ReplayCache",
	"works-closed":               "Closed",
	"lost-updates":               "ConcurrentUpdates",
	"reopen-forgets":             "Persistence",
	"share-nothing":              "SharedStore",
}

// TestSuiteCatchesMutants runs the suite against each faulty memory store,
// in a process of its own, and checks that it fails where it should.
func TestSuiteCatchesMutants(t *testing.T) {
	if os.Getenv("STORETEST_MUTANT") != "" {
		t.Skip("running a mutant")
	}
	if testing.Short() {
		t.Skip("runs the suite once for each mutant")
	}
	for name, sub := range mutants {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0], "-test.run=^TestMemStore$", "-test.count=1", "-test.v")
			cmd.Env = append(os.Environ(), "STORETEST_MUTANT="+name)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a store with the fault %s", name)
			}
			if !strings.Contains(string(out), "--- FAIL: TestMemStore/"+sub+" ") {
				t.Errorf("the fault %s was not caught by %s:\n%s", name, sub, out)
			}
		})
	}
}
