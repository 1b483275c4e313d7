// Command cibaload is cibaproxy's load generator and benchmark helper, used
// by scripts/bench.sh (make bench). It talks to loopback only.
//
//	cibaload run        HTTP/1.1 keep-alive load on one phase (respond, poll,
//	                    backchannel); latency percentiles, a status histogram
//	                    keyed by HTTP status and OAuth error code, req/s of the
//	                    answers valid for the phase; JSON out
//	cibaload fill       bulk-create pending requests in a Badger directory
//	                    (the proxy stopped) through the store API, with
//	                    auth_req_ids derived from a seed so run can poll them
//	cibaload smtp-sink  an SMTP server that accepts and counts mails
//	cibaload users      write a users.json of N bench users
//	cibaload ids | bc-once | poll-once | wait-http | sink-wait | get | fetch |
//	freeport
//	                    the small steps of the bench script
//	cibaload report     the table and bin/bench.json from a bench directory
package main

import (
	"fmt"
	"os"
)

type command struct {
	name  string
	short string
	run   func(args []string) error
}

var commands = []command{
	{"run", "generate load on one phase and write its figures as JSON", cmdRun},
	{"fill", "bulk-create pending requests in a Badger directory", cmdFill},
	{"smtp-sink", "accept and count mails over SMTP", cmdSink},
	{"users", "write a users.json of bench users", cmdUsers},
	{"ids", "print the auth_req_ids fill derives from a seed", cmdIDs},
	{"bc-once", "one backchannel request; prints its auth_req_id", cmdBCOnce},
	{"poll-once", "one CIBA poll; prints the status and error code", cmdPollOnce},
	{"wait-http", "wait for the first answer of a server; prints the seconds since a start time", cmdWaitHTTP},
	{"sink-wait", "wait until the SMTP sink counted mails for a recipient", cmdSinkWait},
	{"get", "print a top-level field of a JSON file", cmdGet},
	{"fetch", "GET a URL into a file (a pprof profile)", cmdFetch},
	{"freeport", "print free loopback TCP ports", cmdFreePort},
	{"report", "print the bench table and write the JSON", cmdReport},
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: cibaload <command> [flags]; commands:")
	for _, c := range commands {
		fmt.Fprintf(os.Stderr, "  %-10s %s\n", c.name, c.short)
	}
	fmt.Fprintln(os.Stderr, "cibaload <command> -h shows a command's flags")
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	for _, c := range commands {
		if c.name == os.Args[1] {
			if err := c.run(os.Args[2:]); err != nil {
				fmt.Fprintf(os.Stderr, "cibaload %s: %v\n", c.name, err)
				os.Exit(1)
			}
			return
		}
	}
	usage()
	os.Exit(2)
}
