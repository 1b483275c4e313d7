package cibaproxy

import (
	"fmt"
	"net/url"
)

// pingSupported: ping notifications are sent (discovery advertises ping).
const pingSupported = false

// preparePing keeps, for a ping client, what its notification will need.
// Notifications are not sent yet: ping clients poll.
func (s *Server) preparePing(cl *Client, req *AuthRequest, authReqID, notificationToken string) error {
	return nil
}

// pingItems returns the notification of a decided request to queue with
// the decision: none yet.
func (s *Server) pingItems(r *AuthRequest) []*OutboxItem {
	return nil
}

// validateDelivery checks the client's token delivery mode.
func (cl *Client) validateDelivery() error {
	switch cl.Mode {
	case ModePoll:
	case ModePing:
		if cl.NotificationEndpoint == "" {
			return fmt.Errorf("client %q: mode ping needs a notification_endpoint", cl.ID)
		}
	default:
		return fmt.Errorf("client %q: mode %q must be poll or ping", cl.ID, cl.Mode)
	}
	if cl.NotificationEndpoint != "" {
		u, err := url.Parse(cl.NotificationEndpoint)
		if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
			return fmt.Errorf("client %q: notification_endpoint must be an absolute https URL", cl.ID)
		}
	}
	return nil
}
