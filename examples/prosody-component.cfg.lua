-- Add to /etc/prosody/prosody.cfg.lua (or conf.d/sms.cfg.lua), then reload Prosody.
-- The component port listens on loopback only: the gateway runs beside Prosody.
component_ports = { 5347 }
component_interfaces = { "127.0.0.1" }

Component "sms.example.com"
    component_secret = "change me"   -- the same as [xmpp] secret
