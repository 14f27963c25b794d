# Sourced by nginx-fetch.sh and nginx-proxy.sh (not run): the top of every
# benchmark nginx config and its temp paths, all under $run (the caller's
# temp dir). Needs: run set.
common() {   # common WORKERS: the top of every config
  cat <<CONF
daemon off;
master_process on;
worker_processes $1;
worker_rlimit_nofile 20000;
pid $run/nginx.pid;
error_log $run/logs/error.log warn;
events { worker_connections 19000; }
CONF
}
# shellcheck disable=SC2034  # used by the scripts that source this file
temp_paths="client_body_temp_path $run/body; proxy_temp_path $run/proxy; fastcgi_temp_path $run/fcgi;
    uwsgi_temp_path $run/uwsgi; scgi_temp_path $run/scgi;"
