// Command golisten is the node-scale benchmark's floor: the smallest Go
// daemon that does what a monitor does at idle, listen on a unix socket.
// Built static (CGO_ENABLED=0) and measured like gomon, its private memory
// is what any Go process of this kind costs, whatever it does.
package main

import (
	"fmt"
	"net"
	"os"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: golisten <socket path>")
		os.Exit(2)
	}
	l, err := net.Listen("unix", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "golisten:", err)
		os.Exit(1)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "golisten:", err)
			os.Exit(1)
		}
		_ = c.Close() // nothing to serve: the socket only has to listen
	}
}
