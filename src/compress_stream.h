/* A streamed body compressed as it streams: a transform between two pipes
 * (body_pipe.h). It is the consumer of the origin's pipe, whose taps (the
 * cache writer) keep seeing the identity bytes, and the producer of a new
 * pipe of unknown length (HTTP/1.1 sends it chunked, HTTP/2 as DATA) that
 * the protocol layer consumes instead.
 *
 * Back-pressure holds both ways: while the new pipe is full the transform
 * reads no more of the origin's, whose producer then stops reading the
 * origin. Whenever the origin's pipe runs empty, what the encoder holds is
 * flushed out, so a slow origin's bytes are not held back from the client.
 *
 * Ownership: the new pipe's consumer closes it, once, as body_pipe.h says;
 * the transform then closes the origin's pipe (cancelling the origin read
 * if the body was not complete) and frees itself. */
#ifndef EDGE_COMPRESS_STREAM_H
#define EDGE_COMPRESS_STREAM_H

#include <ev.h>
#include <stdint.h>

#include "body_pipe.h"

/* Takes src over (it must have no consumer yet) and returns the pipe that
 * carries its body in coding; NULL when no encoder could be made (src is
 * then left as it was). conn_id prefixes its log lines. */
edge_pipe *edge_compress_stream(edge_pipe *src, int coding, struct ev_loop *loop, uint64_t conn_id);

#endif
