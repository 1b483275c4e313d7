package cibaproxy

import (
	"context"
	"net/url"
	"strings"
	"sync/atomic"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/cibaproxy/cibaproxy/cibaproxy/internal/urls"
	"github.com/cibaproxy/cibaproxy/cibaproxy/upstream"
)

// settingTokenPath remembers the last discovered token endpoint path, so
// CIBA polls are recognised while the upstream is down. One is kept per
// upstream issuer (the name is followed by "@" and the issuer URL): sites
// on one store, in front of different upstreams, each remember their own.
// A path remembered under the bare name by an earlier release is not
// read: nothing tells whose it was, and the next discovery learns it again.
const settingTokenPath = "token_path"

// tokenPathSetting is the name of the setting of an upstream issuer's token
// path.
func tokenPathSetting(issuer string) string { return settingTokenPath + "@" + issuer }

// tokenSettings is the part of the store that remembers the token path.
type tokenSettings interface {
	Setting(ctx context.Context, name string) ([]byte, error)
	PutSetting(ctx context.Context, name string, value []byte) error
}

// tokenPaths knows the path of the upstream's token endpoint, where CIBA
// polls arrive: the configured token_path, else the one discovery gives,
// remembered in the store so polls are recognised while the upstream is
// down.
type tokenPaths struct {
	configured string
	public     *url.URL // the site's public URL
	setting    string   // the name of the remembered path in the store
	disc       *upstream.Discovery
	settings   tokenSettings
	log        *zap.Logger

	learned  atomic.Pointer[string]
	learning atomic.Bool // a background discovery fetch runs
}

// newTokenPaths returns the token path of a site, reading the remembered
// one from the store when none is configured.
func newTokenPaths(configured, publicURL string, disc *upstream.Discovery, settings tokenSettings, log *zap.Logger) *tokenPaths {
	t := &tokenPaths{configured: configured, disc: disc, settings: settings, log: log, setting: tokenPathSetting(disc.Issuer())}
	t.public, _ = url.Parse(publicURL)
	switch {
	case configured != "":
		t.learned.Store(&configured)
	case settings != nil:
		if v, err := settings.Setting(context.Background(), t.setting); err == nil && len(v) > 0 {
			p := string(v)
			t.learned.Store(&p)
		}
	}
	return t
}

// known returns the path, or "" while it is not known yet.
func (t *tokenPaths) known() string {
	if p := t.learned.Load(); p != nil {
		return *p
	}
	return ""
}

// discover fetches discovery (or takes the cached copy) to learn the path.
func (t *tokenPaths) discover(ctx context.Context) string {
	meta, err := t.disc.Metadata(ctx)
	if err != nil {
		if c := t.log.Check(zapcore.WarnLevel, "upstream discovery failed"); c != nil {
			c.Write(zap.Error(err))
		}
		return ""
	}
	t.learn(meta)
	return t.known()
}

// learnSoon fetches discovery in the background if the path is not known
// yet, so that it is learned (and remembered) long before the first poll
// could find the upstream down.
func (t *tokenPaths) learnSoon() {
	if t.known() != "" || !t.learning.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer t.learning.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), upstream.DiscoveryTimeout)
		defer cancel()
		t.discover(ctx)
	}()
}

// learn takes the token endpoint path from fresh metadata and remembers it
// in the store.
func (t *tokenPaths) learn(meta *upstream.Metadata) {
	if t.configured != "" {
		return
	}
	u, err := url.Parse(meta.TokenEndpoint)
	if err != nil || u.Host == "" || t.public == nil || urls.Origin(u) != urls.Origin(t.public) {
		t.log.Warn("the upstream's token endpoint is not on this origin; set token_path to intercept CIBA polls",
			zap.String("token_endpoint", meta.TokenEndpoint))
		return
	}
	p := u.EscapedPath()
	if old := t.learned.Load(); old != nil && *old == p {
		return
	}
	t.learned.Store(&p)
	if err := t.settings.PutSetting(context.Background(), t.setting, []byte(p)); err != nil {
		t.log.Warn("could not remember the token path", zap.Error(err))
	}
}

// endpointURL is the public URL of the upstream's token endpoint: the
// public origin and the token path (learned from discovery when it is not
// known yet); "" when it cannot be known now.
func (t *tokenPaths) endpointURL(ctx context.Context) string {
	p := t.known()
	if p == "" {
		p = t.discover(ctx)
	}
	if p == "" || t.public == nil || t.public.Host == "" {
		return ""
	}
	return strings.TrimSuffix(t.public.Scheme+"://"+t.public.Host, "/") + p
}
