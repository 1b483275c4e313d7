package cibaproxy

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
