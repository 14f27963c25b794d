/* The request's path through the core: hooks, then back to the protocol. */
#include "dispatch.h"
#include "common.h"
#include "request.h"
#include "script.h"
#include "worker.h"

void edge_dispatch_start(edge_request *req)
{
    edge_worker *w = req->worker;
    req->id_num = ((uint64_t)w->id << 48) | ++w->request_seq;
    req->id[0] = '\0';
    int rc = edge_script_cache_key(&w->script, req);
    if (rc == EDGE_OK) rc = edge_script_respond(&w->script, req);
    if (rc != EDGE_AGAIN) edge_dispatch_finish(req, rc);
}

void edge_dispatch_finish(edge_request *req, int rc)
{
    if (rc != EDGE_OK) edge_response_error(&req->resp, 500);
    req->ops->respond(req);
}

void edge_dispatch_cancel(edge_request *req)
{
    edge_script_cancel(req);
}
