package httpchannel

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/cibaproxy/cibaproxy/cibaproxy/internal/random"
	"github.com/cibaproxy/cibaproxy/cibaproxy/outbox"
	"github.com/cibaproxy/cibaproxy/cibaproxy/store"
	"go.uber.org/zap"
)

// callbackIDKey and callbackTokenKey are the link keys of a callback's id
// and bearer token, apart from the e-mail links' (store.LinkKeyOf(token)).
func callbackIDKey(id string) store.LinkKey {
	return store.LinkKeyOf("cibaproxy http channel callback\x00" + id)
}

func callbackTokenKey(token string) store.LinkKey {
	return store.LinkKeyOf("cibaproxy http channel token\x00" + token)
}

// Deliver posts a request this channel queued (authn.Deliverer): it
// makes the callback, stores its hashes, and POSTs the request to the
// device service. A 2xx answer delivers it; network errors, 408, 425, 429
// and 5xx are retried while the request lives; redirects and other 4xx are
// permanent (a configuration mistake the log names).
func (c *Channel) Deliver(ctx context.Context, it *store.OutboxItem) error {
	var msg Request
	if err := json.Unmarshal(it.Payload, &msg); err != nil {
		return &outbox.PermanentError{Err: fmt.Errorf("undecodable channel request: %w", err)}
	}
	// Ask nobody about a request that can no longer be decided (replaced
	// by a newer one of the user, or decided through an earlier attempt's
	// callback whose answer was lost).
	req, err := c.cfg.Store.Get(ctx, it.ID.Request)
	if errors.Is(err, store.ErrNotFound) {
		return &outbox.PermanentError{Err: errors.New("its request is gone")}
	}
	if err != nil {
		return fmt.Errorf("reading the request: %w", err)
	}
	now := c.now()
	switch {
	case req.Status != store.StatusPending:
		if ce := c.log.Check(zap.DebugLevel, "channel request not sent: already decided"); ce != nil {
			ce.Write(zap.String("request", it.ID.Request.Short()))
		}
		return nil
	case req.Expired(now):
		return &outbox.PermanentError{Err: errors.New("its request expired")}
	}

	id, err := random.Token(16)
	if err != nil {
		return err
	}
	token, err := random.Token(32)
	if err != nil {
		return err
	}
	if err := c.cfg.Store.AddLink(ctx, callbackIDKey(id), it.ID.Request, req.Expires); err != nil {
		return fmt.Errorf("storing the callback: %w", err)
	}
	if err := c.cfg.Store.AddLink(ctx, callbackTokenKey(token), it.ID.Request, req.Expires); err != nil {
		return fmt.Errorf("storing the callback token: %w", err)
	}
	msg.CallbackURL = c.base + CallbackPath + id
	msg.CallbackToken = token
	msg.ExpiresIn = int64((req.Expires.Sub(now) + time.Second - 1) / time.Second)
	body, err := json.Marshal(&msg)
	if err != nil {
		return &outbox.PermanentError{Err: err}
	}

	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, bytes.NewReader(body))
	if err != nil {
		return &outbox.PermanentError{Err: errors.New("the endpoint URL cannot be requested")}
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "application/json")
	hreq.Header.Set("User-Agent", "cibaproxy")
	if c.cfg.Token != "" {
		hreq.Header.Set("Authorization", "Bearer "+c.cfg.Token)
	}
	resp, err := c.client.Do(hreq)
	if err != nil {
		// A *url.Error repeats the URL, whose query may hold a key.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return fmt.Errorf("posting to the device service: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return nil
	case code == http.StatusRequestTimeout, code == http.StatusTooEarly, code == http.StatusTooManyRequests, code >= 500:
		return fmt.Errorf("the device service answered %d", code)
	case code >= 300 && code < 400:
		return &outbox.PermanentError{Err: fmt.Errorf("the device service answered %d (redirects are not followed)", code)}
	default:
		return &outbox.PermanentError{Err: fmt.Errorf("the device service answered %d", code)}
	}
}
