package cibaproxy

import (
	"net/http"
	"strconv"
	"sync"

	"go.uber.org/zap"

	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/upstream"
)

// discoveryDoc serves the upstream's discovery document with the CIBA
// metadata added (CIBA Core §4), built once per fetch of the upstream's.
type discoveryDoc struct {
	disc      *upstream.Discovery
	fields    upstream.CIBAFields
	tokenPath *tokenPaths
	log       *zap.Logger

	mu   sync.Mutex
	from *upstream.Metadata // the metadata doc was built from
	doc  []byte
}

// cibaFields is what discovery advertises: poll and ping, user codes,
// signed requests and private_key_jwt with the accepted algorithms.
func cibaFields(backchannelURL string, algs []string) upstream.CIBAFields {
	return upstream.CIBAFields{
		BackchannelEndpoint: backchannelURL,
		DeliveryModes:       []string{"poll", "ping"},
		UserCodeSupported:   true,
		RequestSigningAlgs:  algs,
		AuthMethods:         []string{"private_key_jwt"},
		AuthSigningAlgs:     algs,
	}
}

// serve answers a GET or HEAD of the document.
func (d *discoveryDoc) serve(w http.ResponseWriter, r *http.Request) {
	meta, err := d.disc.Metadata(r.Context())
	if err != nil {
		oauth.WriteError(w, oauth.Unavailable("the upstream's discovery document is unavailable", 5, err))
		d.log.Warn("upstream discovery failed", zap.Error(err))
		return
	}
	doc, err := d.build(meta)
	if err != nil {
		oauth.WriteError(w, oauth.ServerError("the upstream's discovery document is malformed", err))
		d.log.Error("upstream discovery is malformed", zap.Error(err))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(doc)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(doc)
	}
}

// build returns the augmented document of meta, built once per fetch; the
// token path is learned from each fetch.
func (d *discoveryDoc) build(meta *upstream.Metadata) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.from == meta {
		return d.doc, nil
	}
	doc, err := meta.Augment(d.fields)
	if err != nil {
		return nil, err
	}
	d.tokenPath.learn(meta)
	d.from, d.doc = meta, doc
	return doc, nil
}
