// Node-RED settings for the ingest peer (../../../shared/peers/node-red/settings.js), changed only where
// bench/bench_peer.py needs it: the editor/admin port and the user directory come from the environment, so each run
// gets a free port and its own flows.json. pg is exposed to function nodes as in the shared settings.
module.exports = {
    uiHost: "127.0.0.1",
    uiPort: Number(process.env.PEER_UI_PORT || 1895),
    userDir: process.env.PEER_USER_DIR || "./data",
    flowFile: "flows.json",
    credentialSecret: false,
    functionGlobalContext: { pg: require("pg") },
    logging: { console: { level: "info", metrics: false, audit: false } },
    editorTheme: { projects: { enabled: false } },
    diagnostics: { enabled: false },
    telemetry: { enabled: false, updateNotification: false },
    externalModules: { autoInstall: false, palette: { allowInstall: false }, modules: { allowInstall: false } }
};
