// Command dockerclient only links github.com/docker/docker/client, the
// Docker client rootswap is built on, and exits: the bench times it as the
// floor of any command that can talk to Docker through that package
// (start-up plus its dependencies' package initialisation).
package main

import (
	"os"

	"github.com/docker/docker/client"
)

func main() {
	os.Stdout.WriteString(client.DefaultDockerHost + "\n")
}
