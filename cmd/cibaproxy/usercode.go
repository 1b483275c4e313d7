package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"unicode"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/term"

	"github.com/cibaproxy/cibaproxy/cibaproxy/users"
)

func hashUserCodeCommand() *cobra.Command {
	var cost int
	cmd := &cobra.Command{
		Use:   "hash-user-code [--cost <n>]",
		Short: "Prints the bcrypt hash of a user_code, for users.json",
		Long: `
Hashes a user's user_code (CIBA Core §7.1: a secret the user knows, which a
client registered with "user_code required" must send with every request
for them) with bcrypt, for the user_code_hash field of users.json:

  {"users":[{"username":"alice","email":"alice@example.com",
             "user_code_hash":"$2a$10$..."}]}

The code is read from standard input. On a terminal it is asked for twice,
without echo; otherwise the first line is read (one code, at most 72 bytes,
without surrounding white space; the line ending is not part of it). It is
never taken from the command line, which other users of the machine can see.

Output: the hash and a newline on stdout; prompts and errors on stderr.
Each run salts afresh, so the same code hashes differently every time.

--cost is bcrypt's work factor, 4 to 14 (each step doubles the time of
every check of the code at the backchannel endpoint); the default is
bcrypt's, 10.
Use one cost for all users: a request for a user without a code is checked
against a dummy hash of the highest cost in the file, so the time it takes
does not tell who has a code.

Exit status: 0 with a hash; 1 when reading fails; 2 for usage errors or a
code that cannot be used.
`,
		Example: `  $ cibaproxy ciba hash-user-code
  User code: 
  Again: 
  $2a$10$...

  $ printf '%s\n' "$CODE" | cibaproxy ciba hash-user-code --cost 12`,
		Args: cobra.ArbitraryArgs, // checked in RunE, to exit 2
	}
	cmd.Flags().IntVar(&cost, "cost", bcrypt.DefaultCost, fmt.Sprintf("bcrypt cost, %d to %d", bcrypt.MinCost, users.MaxUserCodeCost))

	prog := filepath.Base(os.Args[0]) + " ciba hash-user-code"
	cmd.SilenceErrors = true
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		fmt.Fprintf(os.Stderr, "%s: %v (see --help)\n", prog, err)
		return exitCode(cmd, 2)
	})
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			fmt.Fprintf(os.Stderr, "%s: unexpected argument (the code is read from standard input; see --help)\n", prog)
			return exitCode(cmd, 2)
		}
		if cost < bcrypt.MinCost || cost > users.MaxUserCodeCost {
			fmt.Fprintf(os.Stderr, "%s: --cost %d must be between %d and %d\n", prog, cost, bcrypt.MinCost, users.MaxUserCodeCost)
			return exitCode(cmd, 2)
		}
		code, err := readUserCode(os.Stdin, os.Stderr)
		var bad badCodeError
		if errors.As(err, &bad) {
			fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
			return exitCode(cmd, 2)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
			return exitCode(cmd, 1)
		}
		hash, err := users.HashUserCode(code, cost)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
			return exitCode(cmd, 2)
		}
		fmt.Fprintln(os.Stdout, hash)
		return nil
	}
	return cmd
}

// badCodeError is a code that was read but cannot be used.
type badCodeError struct{ msg string }

func (e badCodeError) Error() string { return e.msg }

// readUserCode reads the code: twice without echo from a terminal,
// prompting on prompt; else the first line of in.
func readUserCode(in *os.File, prompt io.Writer) (string, error) {
	fd := int(in.Fd())
	if term.IsTerminal(fd) {
		fmt.Fprint(prompt, "User code: ")
		first, err := term.ReadPassword(fd)
		fmt.Fprintln(prompt)
		if err != nil {
			return "", fmt.Errorf("reading the code: %w", err)
		}
		fmt.Fprint(prompt, "Again: ")
		second, err := term.ReadPassword(fd)
		fmt.Fprintln(prompt)
		if err != nil {
			return "", fmt.Errorf("reading the code: %w", err)
		}
		if !bytes.Equal(first, second) {
			return "", badCodeError{"the two codes differ"}
		}
		return checkUserCode(string(first))
	}
	return readUserCodeLine(in)
}

// maxCodeInput bounds what is read from a pipe.
const maxCodeInput = 4 << 10

// readUserCodeLine reads one code, the first line of r.
func readUserCodeLine(r io.Reader) (string, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxCodeInput+1))
	if err != nil {
		return "", fmt.Errorf("reading the code: %w", err)
	}
	if len(data) > maxCodeInput {
		return "", badCodeError{"standard input is too long for one code"}
	}
	s := string(data)
	line, rest, _ := strings.Cut(s, "\n")
	line = strings.TrimSuffix(line, "\r")
	if strings.TrimSpace(rest) != "" {
		return "", badCodeError{"standard input holds more than one line; give one code per run"}
	}
	return checkUserCode(line)
}

// checkUserCode refuses codes a user could not type reliably.
func checkUserCode(code string) (string, error) {
	switch {
	case code == "":
		return "", badCodeError{"no code was given"}
	case strings.TrimSpace(code) != code:
		return "", badCodeError{"the code has surrounding white space"}
	case len(code) > users.MaxUserCodeBytes:
		return "", badCodeError{fmt.Sprintf("the code is longer than %d bytes (bcrypt reads no more)", users.MaxUserCodeBytes)}
	case strings.IndexFunc(code, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0:
		return "", badCodeError{"the code holds control characters"}
	}
	return code, nil
}
