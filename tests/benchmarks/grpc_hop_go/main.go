// A raw-bytes gRPC hop in Go, for bench_sidecar.py --compiled-hop only: what the extra hop
// costs when it is not Python. Not part of Strata. Build: go build -o /tmp/grpc-hop .
package main

import (
	"context"
	"flag"
	"log"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"
)

type raw struct{}

func (raw) Marshal(v any) ([]byte, error)      { return *(v.(*[]byte)), nil }
func (raw) Unmarshal(data []byte, v any) error { *(v.(*[]byte)) = append([]byte(nil), data...); return nil }
func (raw) Name() string                       { return "proto" }

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "")
	upstream := flag.String("upstream", "", "")
	flag.Parse()
	encoding.RegisterCodec(raw{})
	conn, err := grpc.NewClient(*upstream, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	handler := func(_ any, stream grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(stream)
		var in []byte
		if err := stream.RecvMsg(&in); err != nil {
			return err
		}
		// Read the key header as a proxy checking it would; forward the rest.
		md, _ := metadata.FromIncomingContext(stream.Context())
		_ = md.Get("authorization")
		var out []byte
		if err := conn.Invoke(context.Background(), method, &in, &out); err != nil {
			return err
		}
		return stream.SendMsg(&out)
	}
	server := grpc.NewServer(grpc.UnknownServiceHandler(handler))
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(server.Serve(lis))
}
