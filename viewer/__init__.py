"""The viewer: FastAPI REST API, alert websockets and the operations centre's web page."""
