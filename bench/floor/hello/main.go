// Command hello is the smallest Go program: the bench times it as the
// floor of any Go command on the machine (runtime start-up, no packages).
package main

import "os"

func main() { os.Stdout.WriteString("hello\n") }
