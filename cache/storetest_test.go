package cache_test

import (
	"github.com/rootswap/rootswap/cache"
	"github.com/rootswap/rootswap/snapshot/storetest"
)

// The internal tests of cache check their stores with storetest.Check too
// (see CheckStore in store_test.go).
func init() { cache.CheckStore = storetest.Check }
