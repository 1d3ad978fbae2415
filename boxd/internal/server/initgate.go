package server

import "github.com/langbot-k8s/langbot-k8s/boxd/internal/rpc"

// requireInit refuses the actions that start a sandbox or run something in one until a
// configuration was applied (box_init, or LANGBOT_BOX_CONFIG at start-up): before that boxd
// knows no allowed mount roots, and a peer could mount any host directory the block list does
// not name (/usr, /home, /var/lib ...). LangBot always sends box_init right after __ping
// (§5.1). The class is the one LangBot itself reports a mount without roots with
// (BoxValidationError, 4.10.8's `host_path mounting is disabled because no
// allowed_mount_roots are configured`). Reads, deletes and process stops stay available.
func (s *Server) requireInit(action string) error {
	switch action {
	case "box_exec", "box_create_session", "box_start_managed_process":
	default:
		return nil
	}
	if s.Config().Initialized {
		return nil
	}
	return rpc.Errorf(rpc.BoxValidationError, "Box runtime is not initialised: send box_init with box.local (host_root or allowed_mount_roots) before sandbox actions")
}
