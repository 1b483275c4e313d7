package cibaproxy

import (
	"net/http"
	"strconv"
	"sync"

	"go.uber.org/zap"

	"github.com/cibaproxy/cibaproxy/cibaproxy/oauth"
	"github.com/cibaproxy/cibaproxy/cibaproxy/upstream"
)

// discoveryDoc is the augmented discovery document, built once per fetch
// of the upstream's.
type discoveryDoc struct {
	mu   sync.Mutex
	from *upstream.Metadata // the metadata doc was built from
	doc  []byte
}

func (s *Server) serveDiscovery(w http.ResponseWriter, r *http.Request) {
	meta, err := s.disc.Metadata(r.Context())
	if err != nil {
		oauth.WriteError(w, oauth.Unavailable("the upstream's discovery document is unavailable", 5, err))
		s.log.Warn("upstream discovery failed", zap.Error(err))
		return
	}
	doc, err := s.discoveryDoc(meta)
	if err != nil {
		oauth.WriteError(w, oauth.ServerError("the upstream's discovery document is malformed", err))
		s.log.Error("upstream discovery is malformed", zap.Error(err))
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

// discoveryDoc returns the augmented document, built once per fetch.
func (s *Server) discoveryDoc(meta *upstream.Metadata) ([]byte, error) {
	s.doc.mu.Lock()
	defer s.doc.mu.Unlock()
	if s.doc.from == meta {
		return s.doc.doc, nil
	}
	doc, err := meta.Augment(s.cibaFields())
	if err != nil {
		return nil, err
	}
	s.tokenPath.learn(meta)
	s.doc.from, s.doc.doc = meta, doc
	return doc, nil
}

// cibaFields is what discovery advertises: poll and ping, user codes,
// signed requests and private_key_jwt with the accepted algorithms.
func (s *Server) cibaFields() upstream.CIBAFields {
	algs := s.clients.AcceptedAlgs()
	return upstream.CIBAFields{
		BackchannelEndpoint: s.bcURL,
		DeliveryModes:       []string{"poll", "ping"},
		UserCodeSupported:   true,
		RequestSigningAlgs:  algs,
		AuthMethods:         []string{"private_key_jwt"},
		AuthSigningAlgs:     algs,
	}
}
