package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/cibaproxy/cibaproxy/cibaproxy/cibaclient"
)

// envClientSecret is read when --client-secret is not given.
const envClientSecret = "CIBA_CLIENT_SECRET"

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "ciba",
		Short: "OpenID Connect CIBA client commands (a consumption device)",
		Long: `
Commands that act as a CIBA consumption device against a provider that offers
OpenID Connect CIBA (Client Initiated Backchannel Authentication), such as
cibaproxy itself.

  login            start a backchannel login and poll until the user decides
  hash-user-code   print the bcrypt hash of a user_code, for users.json
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.AddCommand(loginCommand())
			cmd.AddCommand(hashUserCodeCommand())
		},
	})
}

type loginOptions struct {
	issuer, clientID, clientSecret, loginHint string
	bindingMessage, scope, acrValues          string
	claims                                    bool
	timeout                                   time.Duration
}

func loginCommand() *cobra.Command {
	var o loginOptions
	cmd := &cobra.Command{
		Use:   "login --issuer <url> --client-id <id> --client-secret <secret> --login-hint <hint> [--binding-message <msg>] [--scope <scopes>] [--acr-values <acrs>] [--claims] [--timeout <duration>]",
		Short: "Logs a user in by CIBA (poll mode) and prints the tokens",
		Long: `
Starts a CIBA login for the user named by --login-hint and waits while the
user decides on their own device (with cibaproxy: the link in the approval
mail), then prints the token response.

It discovers the endpoints at <issuer>/.well-known/openid-configuration (the
issuer must publish backchannel_authentication_endpoint and token_endpoint),
sends the backchannel authentication request with client_secret_basic, and
polls the token endpoint, honouring the interval and adding 5 s after each
slow_down, until tokens arrive, the user denies, the request expires, or
--timeout passes.

The client secret is taken from --client-secret or, when that flag is absent,
from the environment variable CIBA_CLIENT_SECRET (which keeps it out of the
process list and shell history).

Output:
  stdout  the token response as received, pretty-printed JSON. With --claims,
          one JSON object instead: {"tokens": <token response>,
          "id_token_claims": <claims of the verified ID token>}; the ID token
          is verified first (signature against the issuer's keys, iss, exp,
          aud containing the client id, azp, at_hash when present).
  stderr  progress: one line updated in place when stderr is a terminal,
          else one line per change of state; on failure, one line
          "<program> ciba login: <error>" (OAuth errors as "code: description",
          e.g. "access_denied: the user denied the request").

Exit status: 0 with tokens; 1 when the login failed (denied, expired, timed
out, interrupted, network or protocol error); 2 for usage errors.
`,
		Example: `  $ CIBA_CLIENT_SECRET=cc-secret cibaproxy ciba login \
      --issuer http://127.0.0.1:8081/dex --client-id cc --login-hint alice \
      --binding-message "Call 4711" --claims`,
		Args: cobra.ArbitraryArgs, // checked in RunE, to exit 2
	}
	f := cmd.Flags()
	f.StringVar(&o.issuer, "issuer", "", "issuer URL of the provider (required); discovery is fetched from <issuer>/.well-known/openid-configuration")
	f.StringVar(&o.clientID, "client-id", "", "client id (required)")
	f.StringVar(&o.clientSecret, "client-secret", "", "client secret (required unless "+envClientSecret+" is set)")
	f.StringVar(&o.loginHint, "login-hint", "", "the user: username or e-mail address (required)")
	f.StringVar(&o.bindingMessage, "binding-message", "", "short message shown to the user on both devices")
	f.StringVar(&o.scope, "scope", cibaclient.DefaultScope, "space-separated scopes")
	f.StringVar(&o.acrValues, "acr-values", "", "space-separated requested authentication context classes")
	f.BoolVar(&o.claims, "claims", false, `verify the ID token and print {"tokens":…,"id_token_claims":…}`)
	f.DurationVar(&o.timeout, "timeout", 0, "give up after this long (e.g. 2m); 0 waits until the request expires")

	prog := filepath.Base(os.Args[0]) + " ciba login"
	cmd.SilenceErrors = true // errors are printed here, as one line
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		fmt.Fprintf(os.Stderr, "%s: %v (see --help)\n", prog, err)
		return exitCode(cmd, 2)
	})
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			fmt.Fprintf(os.Stderr, "%s: unexpected argument %q (see --help)\n", prog, args[0])
			return exitCode(cmd, 2)
		}
		if !cmd.Flags().Changed("client-secret") {
			o.clientSecret = os.Getenv(envClientSecret)
		}
		if err := o.check(); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v (see --help)\n", prog, err)
			return exitCode(cmd, 2)
		}
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		err := runLogin(ctx, o, os.Stdout, newProgressWriter(os.Stderr, prog))
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %s\n", prog, oneLine(err.Error()))
			return exitCode(cmd, 1)
		}
		return nil
	}
	return cmd
}

func (o *loginOptions) check() error {
	var missing []string
	for _, f := range []struct{ name, v string }{
		{"--issuer", o.issuer}, {"--client-id", o.clientID}, {"--login-hint", o.loginHint},
	} {
		if strings.TrimSpace(f.v) == "" {
			missing = append(missing, f.name)
		}
	}
	if o.clientSecret == "" {
		missing = append(missing, "--client-secret (or "+envClientSecret+")")
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	if o.timeout < 0 {
		return fmt.Errorf("--timeout %s must not be negative", o.timeout)
	}
	return nil
}

// exitCode makes caddycmd.Main exit with code after the error was printed.
func exitCode(cmd *cobra.Command, code int) error {
	cmd.SilenceErrors = true
	if code == 1 {
		return errors.New("exit status 1") // Main exits 1 on any error
	}
	// caddycmd turns a status above 1 into its exit error.
	return caddycmd.WrapCommandFuncForCobra(func(caddycmd.Flags) (int, error) { return code, nil })(cmd, nil)
}

// runLogin discovers, starts and polls; it writes the result to stdout.
func runLogin(ctx context.Context, o loginOptions, stdout io.Writer, pw *progressWriter) (err error) {
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	defer func() {
		// Say why the context ended rather than how the call it ended failed.
		switch {
		case err == nil:
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			err = fmt.Errorf("timed out after %s (--timeout)", o.timeout)
		case errors.Is(ctx.Err(), context.Canceled):
			err = errors.New("interrupted")
		}
	}()
	md, err := cibaclient.Discover(ctx, nil, o.issuer)
	if err != nil {
		return err
	}
	c := &cibaclient.Client{Metadata: md, ClientID: o.clientID, ClientSecret: o.clientSecret}
	a, err := c.Start(ctx, cibaclient.AuthRequest{
		Scope:          o.scope,
		LoginHint:      o.loginHint,
		BindingMessage: o.bindingMessage,
		ACRValues:      o.acrValues,
	})
	if err != nil {
		return fmt.Errorf("backchannel authentication request: %w", err)
	}
	pw.started(o.loginHint, a)
	stopTicker := pw.tick(a)
	tok, err := c.Poll(ctx, a, pw.update)
	stopTicker()
	if err != nil {
		pw.done("")
		return err
	}
	pw.done("tokens received")

	out := tok.Raw
	if o.claims {
		claims, err := c.VerifyIDToken(ctx, tok)
		if err != nil {
			return err
		}
		out, err = json.Marshal(struct {
			Tokens        json.RawMessage `json:"tokens"`
			IDTokenClaims json.RawMessage `json:"id_token_claims"`
		}{tok.Raw, claims})
		if err != nil {
			return err
		}
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, out, "", "  "); err != nil {
		return fmt.Errorf("token response: %w", err)
	}
	buf.WriteByte('\n')
	_, err = stdout.Write(buf.Bytes())
	return err
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// progressWriter shows the polling on stderr: on a terminal, one line
// rewritten in place (refreshed every second so the time left counts down);
// elsewhere, one line per change of state.
type progressWriter struct {
	w    io.Writer
	prog string
	tty  bool

	last     cibaclient.Progress
	haveLast bool
	drawn    bool
	updates  chan cibaclient.Progress
}

func newProgressWriter(f *os.File, prog string) *progressWriter {
	tty := false
	if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 && os.Getenv("TERM") != "dumb" {
		tty = true
	}
	return &progressWriter{w: f, prog: prog, tty: tty}
}

func (p *progressWriter) started(hint string, a *cibaclient.Auth) {
	fmt.Fprintf(p.w, "%s: waiting for %s to approve on their device (expires in %s, polling every %s)\n",
		p.prog, hint, time.Duration(a.ExpiresIn)*time.Second, a.Interval)
}

// tick redraws the terminal line every second until the returned stop.
// Updates from Poll go through the same goroutine, so drawing never races.
func (p *progressWriter) tick(a *cibaclient.Auth) (stop func()) {
	if !p.tty {
		return func() {}
	}
	p.updates = make(chan cibaclient.Progress)
	quit, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		cur := cibaclient.Progress{Deadline: a.Deadline, Interval: a.Interval, Last: "waiting for the first poll"}
		for {
			cur.Remaining = max(time.Until(cur.Deadline), 0)
			p.draw(cur)
			select {
			case cur = <-p.updates:
			case <-t.C:
			case <-quit:
				return
			}
		}
	}()
	return func() {
		close(quit)
		<-finished
		p.updates = nil
	}
}

// update is Poll's progress callback.
func (p *progressWriter) update(pr cibaclient.Progress) {
	if p.tty {
		p.updates <- pr
		return
	}
	if p.haveLast && pr.Last == p.last.Last && pr.Interval == p.last.Interval {
		return
	}
	p.last, p.haveLast = pr, true
	fmt.Fprintf(p.w, "%s: %s (%s left, polling every %s)\n", p.prog, pr.Last, pr.Remaining.Round(time.Second), pr.Interval)
}

func (p *progressWriter) draw(pr cibaclient.Progress) {
	fmt.Fprintf(p.w, "\r\033[K%s: %s left · last answer: %s · polling every %s",
		p.prog, pr.Remaining.Round(time.Second), pr.Last, pr.Interval)
	p.drawn = true
}

// done ends the progress display, with a final message when msg is set.
func (p *progressWriter) done(msg string) {
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
		p.drawn = false
	}
	if msg != "" {
		fmt.Fprintf(p.w, "%s: %s\n", p.prog, msg)
	}
}
