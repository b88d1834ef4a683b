package client

// DataPlaneServer returns the name of the server the client's data-plane
// connection is on, or "" while it has none (fail-over tests).
func DataPlaneServer(c *Client) string {
	c.mu.Lock()
	nc := c.nc
	c.mu.Unlock()
	if nc == nil || !nc.IsConnected() {
		return ""
	}
	return nc.ConnectedServerName()
}
