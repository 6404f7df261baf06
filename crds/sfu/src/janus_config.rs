//! The configuration files of a Janus that Switchboard starts itself: dev mode's `--janus` and
//! the test harness. One VideoRoom plugin with string room ids and an `admin_key`; the HTTP
//! transport with the admin API on its own port; the WebSocket transport browsers use; signed
//! token auth; an RTP port range; and every other plugin and transport the Debian package
//! ships turned off (fewer threads, and nothing listening that Switchboard does not use).
//!
//! Pure text: the caller writes the files into `configs_folder` and starts
//! `janus --configs-folder <dir> --config <dir>/janus.jcfg`.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

/// Plugins the Debian package ships besides the VideoRoom.
const OTHER_PLUGINS: &str = "libjanus_audiobridge.so,libjanus_duktape.so,libjanus_echotest.so,\
    libjanus_lua.so,libjanus_nosip.so,libjanus_recordplay.so,libjanus_sip.so,\
    libjanus_streaming.so,libjanus_textroom.so,libjanus_videocall.so,libjanus_voicemail.so";
/// Transports the Debian package ships besides HTTP and WebSocket.
const OTHER_TRANSPORTS: &str =
    "libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_pfunix.so,libjanus_rabbitmq.so";

/// Everything that differs between two local Janus instances.
#[derive(Clone, PartialEq, Eq)]
pub struct LocalJanus {
    /// `server_name`, shown in `/janus/info` and the log.
    pub name: String,
    /// Where the `.jcfg` files are written.
    pub configs_folder: String,
    /// The package's library folder (`plugins/`, `transports/`, ...); `None` keeps the
    /// folders Janus was built with, which is right for a packaged Janus.
    pub lib_folder: Option<String>,
    /// The address the HTTP, admin and WebSocket transports listen on.
    pub listen_ip: Ipv4Addr,
    /// Gather ICE candidates only on this address. `None` gathers on every interface except
    /// loopback, which Janus always skips.
    pub ice_ip: Option<Ipv4Addr>,
    pub http_port: u16,
    pub admin_port: u16,
    pub ws_port: u16,
    /// Ports for media; instances side by side get ranges of their own.
    pub rtp_ports: RangeInclusive<u16>,
    /// Seconds a Janus session lives without a request.
    pub session_timeout_secs: u32,
    /// `token_auth_secret`.
    pub token_secret: String,
    /// The admin API's `admin_secret`.
    pub admin_secret: String,
    /// The VideoRoom plugin's `admin_key`.
    pub room_admin_key: String,
}

// Secrets never reach logs, even through `{:?}`.
impl std::fmt::Debug for LocalJanus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalJanus")
            .field("name", &self.name)
            .field("listen_ip", &self.listen_ip)
            .field("ice_ip", &self.ice_ip)
            .field("ws_port", &self.ws_port)
            .field("rtp_ports", &self.rtp_ports)
            .finish_non_exhaustive()
    }
}

impl LocalJanus {
    /// The WebSocket URL clients (and an SfuNode's `url`) use.
    pub fn ws_url(&self) -> String {
        format!("ws://{}:{}", self.listen_ip, self.ws_port)
    }

    /// The admin API's URL (an SfuNode's `admin.url`).
    pub fn admin_url(&self) -> String {
        format!("http://{}:{}/admin", self.listen_ip, self.admin_port)
    }

    /// `/janus/info`, which answers without a token once Janus is up.
    pub fn info_url(&self) -> String {
        format!("http://{}:{}/janus/info", self.listen_ip, self.http_port)
    }

    /// The files to write into [`LocalJanus::configs_folder`], by file name.
    pub fn files(&self) -> Vec<(&'static str, String)> {
        let folders = match &self.lib_folder {
            Some(lib) => format!(
                "\tplugins_folder = \"{lib}/plugins\"\n\
                 \ttransports_folder = \"{lib}/transports\"\n\
                 \tevents_folder = \"{lib}/events\"\n\
                 \tloggers_folder = \"{lib}/loggers\"\n"
            ),
            None => String::new(),
        };
        let (interface, nat) = match self.ice_ip {
            Some(ip) => (
                format!("\tinterface = \"{ip}\"\n"),
                format!("nat: {{\n\tice_enforce_list = \"{ip}\"\n}}\n"),
            ),
            None => (String::new(), String::new()),
        };
        let janus = format!(
            "general: {{\n\
             \tconfigs_folder = \"{configs}\"\n\
             {folders}\
             \tdebug_level = 4\n\
             \tserver_name = \"{name}\"\n\
             {interface}\
             \tsession_timeout = {timeout}\n\
             \tadmin_secret = \"{admin_secret}\"\n\
             \ttoken_auth = true\n\
             \ttoken_auth_secret = \"{token_secret}\"\n\
             }}\n\
             media: {{\n\
             \trtp_port_range = \"{min}-{max}\"\n\
             }}\n\
             {nat}\
             plugins: {{\n\
             \tdisable = \"{OTHER_PLUGINS}\"\n\
             }}\n\
             transports: {{\n\
             \tdisable = \"{OTHER_TRANSPORTS}\"\n\
             }}\n\
             events: {{\n\
             \tbroadcast = false\n\
             }}\n\
             loggers: {{\n\
             \tdisable = \"libjanus_jsonlog.so\"\n\
             }}\n",
            configs = self.configs_folder,
            name = self.name,
            timeout = self.session_timeout_secs,
            admin_secret = self.admin_secret,
            token_secret = self.token_secret,
            min = self.rtp_ports.start(),
            max = self.rtp_ports.end(),
        );
        let ip = self.listen_ip;
        let http = format!(
            "general: {{\n\
             \tjson = \"compact\"\n\
             \tbase_path = \"/janus\"\n\
             \thttp = true\n\
             \tport = {http_port}\n\
             \tip = \"{ip}\"\n\
             \thttps = false\n\
             }}\n\
             admin: {{\n\
             \tadmin_base_path = \"/admin\"\n\
             \tadmin_http = true\n\
             \tadmin_port = {admin_port}\n\
             \tadmin_ip = \"{ip}\"\n\
             \tadmin_https = false\n\
             }}\n",
            http_port = self.http_port,
            admin_port = self.admin_port,
        );
        let websockets = format!(
            "general: {{\n\
             \tjson = \"compact\"\n\
             \tws = true\n\
             \tws_port = {ws_port}\n\
             \tws_ip = \"{ip}\"\n\
             \twss = false\n\
             }}\n\
             admin: {{\n\
             \tadmin_ws = false\n\
             \tadmin_wss = false\n\
             }}\n",
            ws_port = self.ws_port,
        );
        let videoroom = format!(
            "general: {{\n\
             \tadmin_key = \"{key}\"\n\
             \tstring_ids = true\n\
             }}\n",
            key = self.room_admin_key,
        );
        vec![
            ("janus.jcfg", janus),
            ("janus.transport.http.jcfg", http),
            ("janus.transport.websockets.jcfg", websockets),
            ("janus.plugin.videoroom.jcfg", videoroom),
        ]
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn local(ice_ip: Option<Ipv4Addr>) -> LocalJanus {
        LocalJanus {
            name: "janus-a".to_owned(),
            configs_folder: "/tmp/janus-a".to_owned(),
            lib_folder: None,
            listen_ip: Ipv4Addr::LOCALHOST,
            ice_ip,
            http_port: 8088,
            admin_port: 7088,
            ws_port: 8188,
            rtp_ports: 20000..=20099,
            session_timeout_secs: 30,
            token_secret: "t".to_owned(),
            admin_secret: "a".to_owned(),
            room_admin_key: "k".to_owned(),
        }
    }

    fn file(janus: &LocalJanus, name: &str) -> String {
        janus
            .files()
            .into_iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1
    }

    #[test]
    fn token_auth_ports_and_room_settings_are_in_their_files() {
        let janus = local(None);
        let main = file(&janus, "janus.jcfg");
        assert!(main.contains("token_auth = true\n\ttoken_auth_secret = \"t\""));
        assert!(main.contains("admin_secret = \"a\""));
        assert!(main.contains("rtp_port_range = \"20000-20099\""));
        assert!(!main.contains("plugins_folder"), "packaged folders kept");
        assert!(!main.contains("ice_enforce_list"), "every interface");
        assert!(file(&janus, "janus.transport.http.jcfg").contains("admin_port = 7088"));
        assert!(file(&janus, "janus.transport.websockets.jcfg").contains("ws_port = 8188"));
        let room = file(&janus, "janus.plugin.videoroom.jcfg");
        assert!(room.contains("admin_key = \"k\"") && room.contains("string_ids = true"));
        assert_eq!(janus.ws_url(), "ws://127.0.0.1:8188");
        assert_eq!(janus.admin_url(), "http://127.0.0.1:7088/admin");
    }

    #[test]
    fn an_ice_address_pins_gathering_to_it() {
        let main = file(&local(Some(Ipv4Addr::new(127, 0, 0, 2))), "janus.jcfg");
        assert!(main.contains("interface = \"127.0.0.2\""));
        assert!(main.contains("ice_enforce_list = \"127.0.0.2\""));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let shown = format!("{:?}", local(None));
        assert!(!shown.contains("token_secret") && !shown.contains("admin_secret"));
    }
}
