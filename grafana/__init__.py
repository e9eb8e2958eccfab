"""labq's Grafana dashboards (generated JSON in dashboards/, provisioning in provisioning/)."""
