-- Add to /etc/prosody/prosody.cfg.lua (or conf.d/sms.cfg.lua), then reload Prosody.
-- The component port listens on loopback only: the gateway runs beside Prosody.
component_ports = { 5347 }
component_interfaces = { "127.0.0.1" }

Component "sms.example.com"
    component_secret = "change me"   -- the same as [xmpp] secret

-- Only with [media] store = "upload" (inbound pictures go to your users'
-- own upload service, XEP-0363). Components of the same Prosody may upload
-- by default; if your upload component has an access list, add the gateway:
-- Component "upload.example.com" "http_file_share"
--     http_file_share_access = { "sms.example.com" }

-- Optional: contacts in users' rosters with their names (XEP-0356). Needs
-- Debian's prosody-modules (mod_privilege). Put "privilege" in the global
-- modules_enabled too, and the grant in each VirtualHost whose users text:
-- modules_enabled = { --[[ … ]] "privilege" }
-- VirtualHost "example.com"
--     privileged_entities = { ["sms.example.com"] = { roster = "both" } }
-- Component "sms.example.com"
--     component_secret = "change me"
--     modules_enabled = { "privilege" }
